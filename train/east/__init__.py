"""EAST tricks for extreme sparsity (Li et al., "Pushing the Limits of Sparsity: A Bag of Tricks
for Extreme Pruning", arXiv 2411.13545), composed with the Feather operator:

- ``erk``: ERK per-layer density allocation with exact integer counts.
- ``dyrelu``: DyReLU-B activations phased linearly into plain ReLU.
- ``weight_sharing``: ResNet blocks >= 2 of a stage reuse block 1's convs times a learnable scalar.
- ``cyclic``: density cycling between d and m*d, then death + regrowth by gradient magnitude.

Lifecycle (``train.loop``): build_model -> share_resnet_weights -> attach_dyrelu -> Feather wrap
-> train -> Feather finalize -> materialize_shared_weights -> remove_dyrelu: the finalized model is
an ordinary network with the state_dict keys of ``build_model``'s.
"""
