"""Synthetic gradients on layered circuits: decoupled neural interfaces (``dni``, ``cdni``,
with update probability ``p_update``) and virtual forward-backward networks (``vfbn``).

One concept per module:

* :mod:`.modules` — :class:`ModulePathway` (a module as a feedback pathway with an effective
  weight) and :func:`mlp`, the one builder of synthetic-gradient networks;
* :mod:`.interfaces` — :class:`InterfaceRule`: interfaces, bootstrapped targets δ̃_l,
  ``p_update``, the ``"module"`` optimizer group, the ``interfaces/<l>`` recordings;
* :mod:`.dni` — ``dni`` and ``cdni`` (Jaderberg et al. 2017);
* :mod:`.vfbn` — ``vfbn`` (Miyato et al. 2017).

Equations ↔ code: ``docs/dni.md``.  Importing this package registers the three rules.
"""

from bioprop.rules.synthetic_gradients.dni import (
    DNI,
    MODULE_KINDS,
    ConditionalDNI,
    SyntheticGradientPathway,
)
from bioprop.rules.synthetic_gradients.interfaces import InterfaceRule, true_rate_gradients
from bioprop.rules.synthetic_gradients.modules import (
    Act,
    ModulePathway,
    check_hidden,
    mlp,
    module_parameters,
)
from bioprop.rules.synthetic_gradients.vfbn import VFBN, VFBN_FITS, VFBNPathway

__all__ = [
    "MODULE_KINDS",
    "VFBN_FITS",
    "Act",
    "ModulePathway",
    "SyntheticGradientPathway",
    "VFBNPathway",
    "InterfaceRule",
    "DNI",
    "ConditionalDNI",
    "VFBN",
    "check_hidden",
    "mlp",
    "module_parameters",
    "true_rate_gradients",
]
