"""Two-class image classification shared by Tasks 1-3: data folders and splits (`data`), the
tf.data pipeline and training (`train`), metrics with intervals (`metrics`), the VGG16-style
network (`vgg`) and Grad-CAM (`gradcam`)."""
