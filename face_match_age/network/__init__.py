"""The age network, its distribution maths and the pretrained InceptionResnetV1 weights."""
