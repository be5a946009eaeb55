"""vlkit.tasks"""
