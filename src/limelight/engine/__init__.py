"""limelight's inference engine: token ids and sampling parameters in, token ids out."""
