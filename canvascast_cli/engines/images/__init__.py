"""Image generation: prompts + style -> images (gemini, diffusers, placeholder)."""
