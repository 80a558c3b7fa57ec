"""The voice pipeline: VAD, turn-taking, STT, the agent's LLM and TTS (speech never leaves the box)."""
