"""The calibration routines, one module each."""
