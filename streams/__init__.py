"""GiftGuard streaming: the Faust app, topics, agents, the webhook bridge and the CLI."""
