"""ATRC, adaptive task-relational context (Bruggemann et al., ICCV 2021): the model and its search.

``contexts`` (the context-pooling blocks) and ``genotype`` (which block goes where) are shared;
``search`` (the supergraph, its schedules, the vote) imports only them, and ``model`` (the registered
``atrc`` model) builds on all three. Importing this package registers the model.
"""

from mtl3d.models.atrc.model import ATRC

__all__ = ["ATRC"]
