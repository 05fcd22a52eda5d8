"""Calibration routines and the calibration graph (a later issue builds them)."""
