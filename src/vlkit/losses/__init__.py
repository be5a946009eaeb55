"""vlkit.losses"""
