"""vlkit.data"""
