"""The one failure of an image: why the job cannot use it, as a dead letter's reason code and reason."""


class ImageError(ValueError):
  """An image the job cannot use: `code` (transforms.rows.dead_letters) for counting, the message for a person."""

  def __init__(self, code: str, reason: str):
    super().__init__(reason)
    self.code = code
