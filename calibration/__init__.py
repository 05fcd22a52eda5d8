"""Calibration: routines (acquire -> fit -> verdict -> update, routine.py and routines/) and
the graph that runs them in dependency order (graph.py). A routine sees its node, the midpoint
and the peer only through the Protocols of interface.py, which the controller implements."""
