"""What the user sees and sets: panels (draw only), scene and object properties, the add-on
preferences, and the prewarm that starts the backend before the first click."""
