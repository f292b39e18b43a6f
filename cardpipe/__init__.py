"""cardpipe: pre-issues WeChat card tickets to Mini Program users at event scale."""
