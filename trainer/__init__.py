"""Training of the five face-swap methods (Keras 3 on TensorFlow).

Public API for the exporter and `compare`:
    trainer.methods.METHODS                 -> the registry: every method name (the one list)
    trainer.methods.get_method(name)        -> the method class registered under `name`
    trainer.methods.get_preset(name, p)     -> a method's preset (trainer/methods/<m>_defaults.py)
    trainer.runs.load_run(run_dir)          -> a built method with the latest checkpoint's weights
    method.inference_model("a2b" | "b2a")   -> Functional model "face" (None,S,S,3) BGR 0..1 -> (None,S',S',3)
                                               0..1; S' = 2S with the pixel-shuffle head (upscale 2)
    run_config.io_sizes, run_config.template -> (S, S'), the faces' AlignTemplate (None: Haar squares)
This package never imports grpc.
"""
