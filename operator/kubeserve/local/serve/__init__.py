"""`kubeserve serve -f md.yaml`: run one ModelDeployment on this machine, no cluster.

One module per job: spec (read and validate the YAML), model_source (turn spec.model.uri into a
local directory), children (start, watch and stop a server process), and one module per runtime
(onnx in-process; torchserve and tfserving as child processes), driven by command.
"""
