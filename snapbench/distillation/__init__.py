"""SnapFusion's other two contributions: step distillation (CFG-aware, direct) and the efficient VAE
decoder's distillation, plus the toy measurements that show them working."""
