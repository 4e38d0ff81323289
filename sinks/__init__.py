"""GiftGuard sinks: Slack, POS hold clients, Prometheus metrics and output records."""
