"""wanda_engine: prune causal LMs layer by layer with Wanda, magnitude or SparseGPT, and record why.

No Streamlit here: the app and the CLI are thin faces over this package.
"""
__version__ = "0.1.0"
