"""How a trained trial is measured: validation loss at fixed pairs and bits/dim (loss), and
FID (fid)."""
