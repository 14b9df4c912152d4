"""Built-in notifiers: where ``bot.alerts.Alerts`` sends alerts.

* ``webhook``: POSTs each alert as JSON to a URL (your own receiver, Slack-compatible incoming webhooks);
* ``telegram``: sends each alert to a Telegram chat through the Bot API, the token read from the environment.

Both retry 5xx answers and timeouts with a short backoff and never follow redirects; secrets (the token, a
webhook URL's path, header values read from the environment) are kept out of every error, repr and log
line, urllib3's debug log of request lines included (``_http.redact``). See docs/alerts.md.
"""
