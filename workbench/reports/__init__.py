"""Headless production notebooks (papermill) for end-of-day reports."""
