"""The figure of a sweep with options: final loss and angle to the reference over them.

One swept dimension: each quantity against the option's values, one line per rule (mean ±
sd over seeds).  Two or more: a heat map per rule over the first two (mean over seeds and
any further options, said in the title), the cell values written in, failed runs marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["plot_sweep"]

_QUANTITIES = (("final_loss", "final loss", True), ("angle_to_bp", "angle to bp (°)", False))


def _label(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def plot_sweep(ds: xr.Dataset, path: str | Path) -> None:
    """Write the sweep's report figure to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    dims = [d for d in ds.final_loss.dims if d not in ("rule", "seed")]
    qs = [
        (var, ds[var].attrs.get("long_name", label) if var == "final_loss" else label, log)
        for var, label, log in _QUANTITIES
        if bool(ds[var].notnull().any())
    ] or list(_QUANTITIES[:1])
    rules = list(ds.rule.values)
    task = ds.attrs.get("task", "")
    if len(dims) == 1:
        d = dims[0]
        fig, axes = plt.subplots(1, len(qs), figsize=(5.5 * len(qs), 4), squeeze=False)
        x = np.arange(ds.sizes[d])
        for ax, (var, label, log) in zip(axes[0], qs, strict=True):
            for i, r in enumerate(rules):
                v = ds[var].sel(rule=r)
                if not bool(v.notnull().any()):
                    continue
                m, s = v.mean("seed", skipna=True), v.std("seed", skipna=True)
                ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=r, color=f"C{i}")
            ax.set_xticks(x, [_label(v) for v in ds[d].values], rotation=20)
            ax.set_xlabel(d)
            ax.set_ylabel(label)
            if log:
                ax.set_yscale("log")
            ax.set_title(f"{task}: {label}, mean ± sd over {ds.sizes['seed']} seeds", fontsize=9)
            ax.legend(fontsize=8)
    else:
        dy, dx = dims[:2]
        rest = dims[2:]
        fig, axes = plt.subplots(
            len(rules), len(qs), figsize=(4.8 * len(qs), 3.4 * len(rules)), squeeze=False
        )
        for j, (var, label, log) in enumerate(qs):
            mean = ds[var].mean(["seed", *rest], skipna=True)
            finite = mean.values[np.isfinite(mean.values)]
            pos = finite[finite > 0]
            failed = (ds.status == "failed").sum(["seed", *rest]) if "status" in ds else None
            for i, r in enumerate(rules):
                ax = axes[i, j]
                m = mean.sel(rule=r).transpose(dy, dx).values
                ax.set_facecolor("0.85")
                ok = ds.status.sel(rule=r) == "ok"
                if var == "angle_to_bp" and bool(ok.any()):
                    if not bool(ds[var].sel(rule=r).where(ok).notnull().any()):
                        ax.set_axis_off()  # the reference rule itself: no angle to show
                        ax.text(0.5, 0.5, f"{r}: the reference (no angle)", ha="center")
                        continue
                n_bad = (
                    failed.sel(rule=r).transpose(dy, dx).values
                    if failed is not None
                    else np.zeros(m.shape, int)
                )
                if log and pos.size:
                    norm = LogNorm(vmin=pos.min(), vmax=pos.max())
                else:
                    norm = None
                im = ax.imshow(m, aspect="auto", cmap="viridis", norm=norm)
                if not log and finite.size:
                    im.set_clim(finite.min(), finite.max())
                for (a, b), v in np.ndenumerate(m):
                    if not np.isfinite(v):
                        text = "failed" if n_bad[a, b] else "—"
                    else:
                        text = f"{v:.2g}" if log else f"{v:.0f}"
                        text += f" ({int(n_bad[a, b])}✗)" if n_bad[a, b] else ""
                    color = "w" if np.isfinite(v) else "k"
                    ax.text(b, a, text, ha="center", va="center", color=color, fontsize=8)
                ax.set_xticks(range(ds.sizes[dx]), [_label(v) for v in ds[dx].values])
                ax.set_yticks(range(ds.sizes[dy]), [_label(v) for v in ds[dy].values])
                ax.set_xlabel(dx)
                ax.set_ylabel(dy)
                ax.set_title(f"{r}: {label}", fontsize=9)
                fig.colorbar(im, ax=ax)
        over = f" and {', '.join(rest)}" if rest else ""
        fig.suptitle(
            f"{task}: mean over {ds.sizes['seed']} seeds{over} (n✗: seeds that failed)",
            fontsize=10,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
