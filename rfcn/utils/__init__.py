"""Small helpers every layer may use, and nothing else: `files` (atomic writes, JSON),
`distributed` (process groups, gathering, DDP wrapping), `process` (device, threads, seeds,
autocast dtype of a tool's process). They import torch and the standard library only."""
