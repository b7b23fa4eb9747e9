"""Import-only stand-in for torchvision on CPU test runs (no CPU wheel exists); see saga_sgl._cpu_shims."""
