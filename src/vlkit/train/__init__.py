"""vlkit.train"""
