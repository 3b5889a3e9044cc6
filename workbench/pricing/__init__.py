"""Pure numerics: curves, surfaces and pricers for rates, FX, credit and equity, with Greeks.

Nothing here imports zmq, asyncio, multiprocessing or ipywidgets, or reads the clock.
"""
