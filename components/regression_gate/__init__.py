"""RegressionGate: the candidate against the model released on the OTA channel, through TUF."""
