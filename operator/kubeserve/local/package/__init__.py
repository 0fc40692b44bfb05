"""`kubeserve package`: turn a trained model into the artifact a runtime serves, then prove it.

One module per conversion (torch_onnx, torch_mar, keras_savedmodel); each writes its artifact
and loads it back to check it before saying it worked. torch and tensorflow are imported only
inside those modules, so `kubeserve --help` and the operator never pay for them.
"""
