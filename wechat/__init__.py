"""The WeChat protocol: signatures, safe-mode crypto, event XML, the API client and a fake platform."""
