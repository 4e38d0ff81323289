"""GiftGuard detectors: rules and River models over canonical events; no Kafka or Faust."""
