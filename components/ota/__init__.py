"""Over-the-air publishing: a TUF repository of models, and the device-side client."""
