"""Finding faces in photos (MTCNN) and the one image loader and face preprocessing."""
