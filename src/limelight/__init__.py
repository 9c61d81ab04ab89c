"""limelight: a self-hosted, vertically integrated stack for AI characters."""
