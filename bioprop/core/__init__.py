"""The core model: populations, pathways, circuits, activations, initialisers, losses, seeds."""
