"""Visual front end: features, tracking, stereo matching, outlier rejection."""
