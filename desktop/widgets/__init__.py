"""Reusable Qt widgets shared by the pages: plots, thumbnail grids, CAM viewer, bars.

Widgets only display what they are given; none of them calls the engine on the UI thread.
"""
