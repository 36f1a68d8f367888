"""3D face layer: FLAME model files and layer, DECA networks, the rasterizer, landmark fitting."""
