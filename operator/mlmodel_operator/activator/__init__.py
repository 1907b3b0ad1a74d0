"""The activator: where a model's Service points while the model is at zero. It holds the
requests that come in, wakes the model (its Deployment to one replica), forwards them once a
replica is ready, and, without KEDA, takes a model idle for scale_down_delay_seconds to zero.
"""
