"""Converters: turn UNet blocks (and whole models) into Core ML packages."""
