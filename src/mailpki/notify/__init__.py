"""Mail to people: notices to subscribers and alerts to contacts, through a durable outbox."""
