"""Tasks 1-3's application around the library `medlab.classification`: each classifier's
parameters declared once (`cam_parameters`, `transfer_parameters`)."""
