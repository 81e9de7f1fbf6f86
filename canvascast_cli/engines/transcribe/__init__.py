"""Speech-to-text: Whisper models, their weights and the engines that run them."""
