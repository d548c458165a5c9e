"""Built-in synthetic world: procedurally textured indoor scenes rendered to stereo/RGB-D images."""
