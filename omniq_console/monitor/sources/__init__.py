"""Where the monitor learns of changes: listings, the event tail, a Pub/Sub change feed."""
