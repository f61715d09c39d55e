"""Face geometry and image operations shared by the trainer and the server.

Detection (Haar), square crops and their inverse, masks, colour transfer, blending, video
I/O, face sets and the synthetic face renderer. No TensorFlow and no gRPC in here.
"""
