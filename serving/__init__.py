"""The one-request serving path, pure: a user's online features in, a ranked list out.

Both the API (``api.serving.service``, per HTTP request) and the prequential evaluation
(``training.evaluation.prequential``, per replayed event) call these functions, so what is
measured is what is served.
"""
