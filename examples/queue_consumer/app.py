"""A second app built on the throttling library: a queue of orders drained into your own rate-limited API.

Your orders API allows 2 requests per second with a burst of 2. Producers put orders on a queue as
fast as they like; one consumer function delivers them, taking one token of the shared limiter per
order, so the API sees at most its rate however deep the backlog and however many batches run.
Any other function of yours that calls the same API (`limiter.connect(fn, "orders_api")`) draws
from the same bucket.

    pip install -r requirements.txt
    cdk deploy -c orders_api_url=https://orders.internal.example.com
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from throttling_patterns import DownstreamLimit, RuntimeLayer, SharedLimiter, ThrottledQueueConsumer

ORDERS_API = "orders_api"
CONSUMER_CODE = Path(__file__).resolve().parent / "consumer"


class OrdersStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, orders_api_url: str, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        limiter = SharedLimiter(
            self, "Limiter", tunables_prefix="/orders-example",
            downstreams={ORDERS_API: DownstreamLimit(rate_limit_per_sec=2, burst=2, headroom=0.1)},
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        runtime = RuntimeLayer(self, "ThrottlingRuntime", removal_policy=cdk.RemovalPolicy.DESTROY)
        orders = ThrottledQueueConsumer(
            self, "Orders",
            code=lambda_.Code.from_asset(str(CONSUMER_CODE)),
            handler="handler.handler",
            layers=[runtime.layer_version],
            service="orders-consumer",
            description="Delivers queued orders to the orders API at the shared limiter's pace",
            removal_policy=cdk.RemovalPolicy.DESTROY,
            log_retention=logs.RetentionDays.ONE_MONTH,
            function_timeout_sec=30,
            environment={"ORDERS_API_URL": orders_api_url},
        )
        limiter.connect(orders.function, ORDERS_API)
        cdk.CfnOutput(self, "OrdersQueueUrl", value=orders.queue.queue_url)
        cdk.CfnOutput(self, "OrdersDeadLetterQueueUrl", value=orders.dead_letter_queue.queue_url)
        cdk.CfnOutput(self, "ConsumerName", value=orders.function.function_name)


app = cdk.App()
OrdersStack(app, "OrdersExample", orders_api_url=app.node.get_context("orders_api_url"))
app.synth()
