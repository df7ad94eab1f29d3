"""Volcengine RTC Conversational AI (Start/Update/StopVoiceChat): signing, client, sessions, rules.

Importing the package imports nothing else: the registry reads `rules` without paying for the
HTTP client, which is imported only when a run needs it.
"""
