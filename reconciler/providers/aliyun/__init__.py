"""Alibaba Cloud IMS AI agents (ICE OpenAPI 2020-11-09): signing, tokens, client, sessions."""
