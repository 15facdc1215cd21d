"""What a record is: the event catalogue, the published schemas, validation and redaction."""
