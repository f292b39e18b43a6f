"""Go-live readiness: checks that prove an official account and an event will work before launch.

``checks.check_account`` and ``checks.check_event`` build a :class:`report.Report` of items, each
ok / warning / failing with what was checked and a remedy an organiser can act on. The checks are
read-only and cheap enough to run often: they change nothing at WeChat or in cardpipe, read the
access_token and api_ticket like any worker does (fetched only when none is valid, never a forced
refresh), and remember WeChat's passing answers where its state cannot have changed since.
"""
