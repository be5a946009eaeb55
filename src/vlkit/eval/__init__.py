"""vlkit.eval"""
