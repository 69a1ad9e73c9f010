"""Entry points behind tools/: `train(cfg)`, `evaluate(cfg)`, `infer(cfg)` take a composed
config (tools pass Hydra's; tests compose one with Hydra's compose API), build the objects
through rfcn.assembly and run them with rfcn.engine. Results go to files; nothing is printed
(the tools print the returned tables)."""
